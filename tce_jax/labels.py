"""Label conventions every layer shares (a leaf module: it imports nothing of the project)."""

IGNORE_INDEX = 255  # the label of pixels that are not scored (void, unlabelled, padding)
