"""The chat page at ``/``: its router and the HTML file."""
