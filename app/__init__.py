"""ML platform: services and shared libraries (one subpackage per system)."""
