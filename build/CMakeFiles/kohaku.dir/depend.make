# Empty dependencies file for kohaku.
# This may be replaced when dependencies are built.
