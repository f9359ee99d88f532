"""Camera geometry in one convention (OpenCV camera frame, world-to-camera extrinsics, K in pixels).

See ``gst.geometry.conventions`` for the convention, written out once, ``gst.geometry.rays`` for the
Plücker ray-map channel order (``RAY_CHANNELS``) and ``gst.geometry.normalize`` for the one scale
normalisation of relative poses.
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
from gst.geometry.errors import (
    camera_center_error,
    focal_error,
    rotation_error_deg,
    translation_direction_error_deg,
)
from gst.geometry.normalize import (
    denormalize_relative_pose,
    mean_pairwise_baseline,
    normalize_relative_pose,
    normalized_relative_pose,
    relative_plucker_rays,
    scale_world,
)
from gst.geometry.rays import RAY_CHANNELS, cameras_from_rays, pixel_grid, plucker_rays
from gst.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    nearest_rotation,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_rotations,
    rotation_6d_to_matrix,
)

__all__ = [
    "RAY_CHANNELS",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "camera_center_error",
    "camera_centers",
    "cameras_from_rays",
    "denormalize_relative_pose",
    "focal_error",
    "intrinsics_matrix",
    "invert_rigid",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "nearest_rotation",
    "mean_pairwise_baseline",
    "normalize_relative_pose",
    "normalized_relative_pose",
    "opencv_w2c_to_opengl_c2w",
    "opengl_c2w_to_opencv_w2c",
    "pixel_grid",
    "plucker_rays",
    "project_points",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "random_rotations",
    "relative_plucker_rays",
    "relative_w2c",
    "rotation_6d_to_matrix",
    "rotation_error_deg",
    "scale_world",
    "translation_direction_error_deg",
]
