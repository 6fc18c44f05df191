"""Drop-in surfaces for clients written for a hosted avatar API (D-ID Streams, TWIN, HeyGen
v1): each vendor's fields, events and errors mapped onto the same sessions (the routes
are in server/api)."""
