"""Drop-in surfaces for clients written for a hosted avatar API (D-ID Streams, TWIN)."""
