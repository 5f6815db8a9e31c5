"""Backend implementations. Each module imports its heavy dependency only when used."""
