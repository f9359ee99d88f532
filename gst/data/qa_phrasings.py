"""Question templates: for every question kind, training phrasings and held-out phrasings.

Held-out phrasings are never used for training data; evaluating on them measures generalization beyond
the templates (issue 5). Every kind has at least 4 training and 2 held-out phrasings. A phrasing id is
``<kind>/t<i>`` (training) or ``<kind>/h<i>`` (held-out).

Slots: ``{a}``, ``{b}`` object references ("the red box"); ``{ref}`` any reference, also positional
("the leftmost object"); ``{things}`` what to count ("objects", "red objects", "boxes"); ``{rel}``
"closest to" / "farthest from"; ``{motion}`` a sentence describing a camera motion (its wording also
differs between training and held-out phrasings, see ``gst.data.qa_geometry.describe_motion``).
"""

from __future__ import annotations

from types import MappingProxyType

# kind -> family; the order here is the order families and kinds are generated and reported.
KIND_FAMILY: MappingProxyType[str, str] = MappingProxyType(
    {
        "count": "counting",
        "attr_color": "attributes",
        "attr_shape": "attributes",
        "rel_lr": "relative_direction",
        "rel_fb": "relative_direction",
        "rel_viewer": "relative_direction",
        "dist_cam": "distance",
        "dist_pair": "distance",
        "size_larger": "size",
        "size_height": "size",
        "nf_camera": "nearest_farthest",
        "nf_object": "nearest_farthest",
        "cm_turn_dir": "camera_motion",
        "cm_turn_deg": "camera_motion",
        "cm_move_dist": "camera_motion",
        "cm_move_dir": "camera_motion",
        "vis_yesno": "motion_visibility",
        "vis_count": "motion_visibility",
        "vis_which": "motion_visibility",
        "g3d_point": "grounding_3d",
        "g3d_box": "grounding_3d",
    }
)
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(KIND_FAMILY.values()))

_CAM = "(camera frame: x right, y down, z forward, metres)"

# kind -> (training phrasings, held-out phrasings)
TEMPLATES: MappingProxyType[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        "count": (
            (
                "How many {things} are there in the image?",
                "How many {things} can you see?",
                "Count the {things} in view.",
                "What is the number of {things} in the image?",
            ),
            ("How many {things} does this picture show?", "Tell me how many {things} are visible."),
        ),
        "attr_color": (
            (
                "What colour is {ref}?",
                "What is the colour of {ref}?",
                "Which colour does {ref} have?",
                "Name the colour of {ref}.",
            ),
            ("Tell me the colour of {ref}.", "What color is {ref} painted?"),
        ),
        "attr_shape": (
            (
                "What shape is {ref}?",
                "What is the shape of {ref}?",
                "Which kind of object is {ref}?",
                "Name the shape of {ref}.",
            ),
            ("What sort of object is {ref}?", "Identify the shape of {ref}."),
        ),
        "rel_lr": (
            (
                "From the viewer's perspective, is {a} to the left or to the right of {b}?",
                "Is {a} left or right of {b}?",
                "As seen from the camera, is {a} on the left or the right of {b}?",
                "Relative to {b}, is {a} to the left or right?",
            ),
            (
                "Looking at the scene, does {a} lie left or right of {b}?",
                "Compared with {b}, is {a} further left or further right?",
            ),
        ),
        "rel_fb": (
            (
                "From the viewer's perspective, is {a} in front of or behind {b}?",
                "Is {a} in front of {b} or behind it?",
                "Seen from the camera, is {a} in front of or behind {b}?",
                "Relative to {b}, is {a} in front or behind?",
            ),
            (
                "Is {a} nearer the camera than {b} (in front) or farther (behind)?",
                "Does {a} stand in front of or behind {b}?",
            ),
        ),
        "rel_viewer": (
            (
                "Is {a} on your left or on your right?",
                "From where you stand, is {a} to the left or the right?",
                "Is {a} to the viewer's left or right?",
                "Is {a} on the left or the right side of the view?",
            ),
            ("Would you say {a} is left or right of you?", "On which side of you is {a}, left or right?"),
        ),
        "dist_cam": (
            (
                "How far is {a} from the camera, in metres?",
                "What is the distance from the camera to {a}?",
                "How many metres away from the camera is {a}?",
                "Estimate the distance between the camera and {a}.",
            ),
            ("How far away is {a}?", "Give the camera-to-object distance for {a} in metres."),
        ),
        "dist_pair": (
            (
                "How far apart are {a} and {b}, in metres?",
                "What is the distance between {a} and {b}?",
                "How many metres separate {a} from {b}?",
                "Estimate the distance from {a} to {b}.",
            ),
            ("Measure the gap between the centres of {a} and {b}.", "How far is {a} from {b}?"),
        ),
        "size_larger": (
            (
                "Which is larger, {a} or {b}?",
                "Which object is bigger: {a} or {b}?",
                "Is {a} or {b} the larger object?",
                "Between {a} and {b}, which takes up more space?",
            ),
            ("Which has the greater volume, {a} or {b}?", "Of {a} and {b}, which one is bigger?"),
        ),
        "size_height": (
            (
                "How tall is {a}, in metres?",
                "What is the height of {a}?",
                "How high is {a}?",
                "Estimate the height of {a} in metres.",
            ),
            ("How many metres tall is {a}?", "Give the height of {a}."),
        ),
        "nf_camera": (
            (
                "Which object is {rel} the camera?",
                "Which of the visible objects is {rel} the camera?",
                "Name the object {rel} the camera.",
                "What is the object {rel} the viewer?",
            ),
            ("Of everything in view, what is {rel} the camera?", "Tell me which object lies {rel} you."),
        ),
        "nf_object": (
            (
                "Which object is {rel} {a}?",
                "Which of the visible objects is {rel} {a}?",
                "Name the object {rel} {a}.",
                "What is {rel} {a}?",
            ),
            ("Among the other objects, which one is {rel} {a}?", "Tell me which object lies {rel} {a}."),
        ),
        "cm_turn_dir": (
            (
                "Between the first and the second view, did the camera turn left or right?",
                "From view 1 to view 2, which way did the camera turn?",
                "Did the camera rotate to the left or to the right between the two images?",
                "Going from the first image to the second, did the view turn left or right?",
            ),
            (
                "Comparing the two pictures, was the camera panned left or right?",
                "In which direction did the camera swing from the first shot to the second?",
            ),
        ),
        "cm_turn_deg": (
            (
                "By how many degrees did the camera turn between the first and the second view?",
                "How far did the camera rotate, in degrees, from view 1 to view 2?",
                "What is the turning angle between the two views?",
                "How many degrees did the heading change from the first image to the second?",
            ),
            (
                "How much did the camera pan between the two shots, in degrees?",
                "Estimate the rotation angle from the first picture to the second.",
            ),
        ),
        "cm_move_dist": (
            (
                "How far did the camera move between the first and the second view?",
                "What distance did the camera travel from view 1 to view 2?",
                "How many metres did the camera move between the two images?",
                "Estimate how far the camera moved, in metres.",
            ),
            (
                "By how many metres was the camera displaced between the two shots?",
                "How long was the camera's path from the first picture to the second, in a straight line?",
            ),
        ),
        "cm_move_dir": (
            (
                "Between the first and the second view, did the camera move to the left or to the right?",
                "From view 1 to view 2, did the camera shift left or right?",
                "Did the camera travel to its left or to its right between the two images?",
                "Going from the first image to the second, did the camera step left or right?",
            ),
            (
                "Was the camera carried to the left or to the right between the two shots?",
                "Sideways, which way did the camera go from the first picture to the second?",
            ),
        ),
        "vis_yesno": (
            (
                "{motion} Will {a} be visible then?",
                "{motion} Can you see {a} afterwards?",
                "{motion} Does {a} come into view?",
                "{motion} Is {a} in view after that?",
            ),
            ("{motion} Would {a} show up in the new view?", "{motion} Yes or no: is {a} visible now?"),
        ),
        "vis_count": (
            (
                "{motion} How many objects come into view?",
                "{motion} How many new objects become visible?",
                "{motion} How many objects that were out of view can be seen afterwards?",
                "{motion} Count the objects that appear.",
            ),
            (
                "{motion} How many previously hidden objects show up?",
                "{motion} What number of objects newly enters the view?",
            ),
        ),
        "vis_which": (
            (
                "{motion} Which object comes into view?",
                "{motion} Which object becomes visible?",
                "{motion} What new object can you see afterwards?",
                "{motion} Which object appears?",
            ),
            (
                "{motion} Name the object that shows up.",
                "{motion} Which previously unseen object enters the view?",
            ),
        ),
        "g3d_point": (
            (
                "Where is the centre of {a} in camera coordinates? " + _CAM,
                "Give the 3D position of {a} relative to the camera. " + _CAM,
                "What are the camera-frame coordinates of {a}? " + _CAM,
                "Locate {a} in 3D in the camera frame. " + _CAM,
            ),
            (
                "Where in 3D is {a}, relative to the camera? " + _CAM,
                "Report the xyz location of {a} in the camera frame. " + _CAM,
            ),
        ),
        "g3d_box": (
            (
                "Give the 3D bounding box of {a} in camera coordinates. " + _CAM,
                "What is the camera-frame 3D box of {a}? " + _CAM,
                "Draw a 3D box around {a} in the camera frame. " + _CAM,
                "Ground {a} with a 3D bounding box relative to the camera. " + _CAM,
            ),
            (
                "Report the 3D extent and centre of {a} in the camera frame. " + _CAM,
                "Which 3D box in camera coordinates encloses {a}? " + _CAM,
            ),
        ),
    }
)


def phrasing_ids(kind: str, phrasing_split: str) -> tuple[str, ...]:
    """The phrasing ids of ``kind`` in ``phrasing_split`` ("train" or "heldout")."""
    train, heldout = TEMPLATES[kind]
    if phrasing_split == "train":
        return tuple(f"{kind}/t{i}" for i in range(len(train)))
    if phrasing_split == "heldout":
        return tuple(f"{kind}/h{i}" for i in range(len(heldout)))
    raise ValueError(f"phrasing_split must be 'train' or 'heldout', got {phrasing_split!r}")


def render(phrasing_id: str, **slots: str) -> str:
    """The question text of ``phrasing_id`` with its slots filled."""
    kind, _, tag = phrasing_id.partition("/")
    if kind not in TEMPLATES or tag[:1] not in ("t", "h") or not tag[1:].isdigit():
        raise ValueError(f"unknown phrasing id {phrasing_id!r}")
    table = TEMPLATES[kind][0 if tag[0] == "t" else 1]
    i = int(tag[1:])
    if i >= len(table):
        raise ValueError(f"unknown phrasing id {phrasing_id!r}")
    return table[i].format(**slots)
