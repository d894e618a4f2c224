"""The wipe service (信息清除)."""
