"""tellme.hw."""
