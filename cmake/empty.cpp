// Keeps a library with no sources yet (a folder being filled in) buildable.
