"""tellme.boards."""
