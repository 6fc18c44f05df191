"""Avatars: prepared from a video of a person, stored on disk, loaded once for all sessions.

video -> landmarks -> face_box -> face_parsing -> masks, run by `preparation` (the CLI) or
`jobs` (HTTP uploads); `storage` is the on-disk format; `store` the avatars in memory;
`demo` the built-in drawn face, prepared like any other.
"""
