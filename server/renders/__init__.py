"""Renders: speech rendered through the lip-sync engine into an MP4 file, as a background job."""
