"""Whole photos: faces found with their five landmarks (detector.py, MTCNN with the `mtcnn`
wheel's weights), aligned to FFHQ's template and pasted back (align.py), the steps of the
photos job joined (pipeline.py)."""
