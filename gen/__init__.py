"""tellme.gen."""
