# Empty dependencies file for kohaku_core.
# This may be replaced when dependencies are built.
