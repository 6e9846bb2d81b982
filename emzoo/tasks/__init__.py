"""Task extras on top of plain prediction: counting, Grad-CAM explanations, out-of-distribution checks."""
