"""The foundation: errors, files and tables, the run folder, locks, caches, the machine, options."""
