"""The bottom layer, imported by everything and importing nothing of the project above it:
skeleton, quaternions, HumanML3D's 263-d features, IK, the one clean-up step, plausibility
metrics, prompt rules and atomic file writes."""
