"""Small utilities shared by all of detforge."""
