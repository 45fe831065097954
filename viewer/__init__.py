"""Body mesh, rendering and export (BVH, FBX, GLB, MP4, NPY): renders and writes motions only."""
