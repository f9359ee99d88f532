"""Camera geometry in one convention (OpenCV camera frame, world-to-camera extrinsics, K in pixels).

See ``gst.geometry.conventions`` for the convention, written out once.
"""

from gst.geometry.conventions import (
    camera_centers,
    intrinsics_matrix,
    invert_rigid,
    opencv_w2c_to_opengl_c2w,
    opengl_c2w_to_opencv_w2c,
    project_points,
    relative_w2c,
)

__all__ = [
    "camera_centers",
    "intrinsics_matrix",
    "invert_rigid",
    "opencv_w2c_to_opengl_c2w",
    "opengl_c2w_to_opencv_w2c",
    "project_points",
    "relative_w2c",
]
