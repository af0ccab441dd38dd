"""tellme.sim."""
