"""Question phrasings: for every question kind, many training and held-out templates (issues 5, 22).

The templates are expanded from the patterns below (``gst.data.qa_wording``: ``[a|b]`` alternatives,
``!`` marks a held-out part): synonyms (colour / color, object / thing / item, image / picture / view /
photo), openers ("Looking at the image, ..."), word order ("left or right" / "right or left",
"Relative to {b}, is {a} ..." / "Is {a} ... of {b}?") and constructions. A template with no held-out
part is a *training* phrasing, one with at least one a *held-out* phrasing: it contains a word or
construction that no training phrasing of its kind contains, built from words the training phrasings of
the kinds do contain (a construction held out for one kind is trained for a sibling kind). Held-out
phrasings are never used for training data; evaluating on them measures generalisation beyond the
templates. Every kind has at least 24 training and 6 held-out phrasings (``tests/test_qa_wording.py``
states the counts). A phrasing id is ``<kind>/t<i>`` (training) or ``<kind>/h<i>`` (held-out), ``i``
the position in the expansion order, a pure function of the patterns.

Slots: ``{a}``, ``{b}`` object references ("the red box", "the box", "the red object", "the leftmost
object": ``gst.data.qa_families.reference_forms``); ``{ref}`` the reference of an attribute question
(the other attribute or a position); ``{things}`` what to count ("objects", "red objects", "boxes");
``{rel}`` "closest to" / "nearest to" / "farthest from" / "furthest from"; ``{motion}`` a sentence
describing a camera motion (its wording also differs between training and held-out phrasings, see
``gst.data.qa_geometry.describe_motion``). References and ``{rel}`` are drawn per question from forms
shared by both phrasing splits; what is held out is the question's wording.
"""

from __future__ import annotations

from types import MappingProxyType

from gst.data.qa_wording import Phrasing, expand_all

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
        # last, so the questions and wordings of the kinds above are those drawn before it existed (each
        # scene's sampling and wording streams are drawn from in this order); reported with its family
        "vis_stay": "motion_visibility",
    }
)
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(KIND_FAMILY.values()))

_CAM = "(camera frame: x right, y down, z forward, metres)"
_WHERE = "[| in the image| in the picture|! in the photo]"  # where a single-view question looks
_M = "[|, in metres| in metres]"  # an optional unit
_LOOK = "[|Looking at the image, |Looking at the picture, |!Looking at the photo, ]"  # an optional opener

# kind -> patterns, in KIND_FAMILY order. A construction held out for one kind is trained for a sibling
# kind (rel_lr <-> rel_fb, attr_color <-> attr_shape, nf_camera <-> nf_object, the cm_* and vis_* kinds),
# so held-out phrasings recombine words the model reads in training (gst.data.qa_wording).
PATTERNS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "count": (
            "How many {things} [are there|are visible|can you see|do you see|!can you spot] in the "
            "[image|picture|view|!photo]?",
            "How many {things} [can you see|are visible|are shown|do you see]?",
            "How many {things} does the [image|picture|!photo] show?",
            "[Count|!Please count] the {things} [in the image|in the picture|in view].",
            "What is the number of {things} [in the image|in the picture|in view|!in the photo]?",
            "[In|Looking at] the [image|picture|!photo], how many {things} "
            "[are there|do you see|are visible]?",
            "[!Tell me] how many {things} [are visible|there are|you can see].",
            "[!What number of] {things} [are there|are visible] in the [image|picture]?",
        ),
        "attr_color": (
            "[What colour is|What color is|!Which colour is|!Which color is] "
            "{ref}[| in the image| in the photo]?",
            "What is the [colour|color] of {ref}[| in the picture| in the photo]?",
            "[Which|What] [colour|color] does {ref} have?",
            "[Name|Give|State|Please name|Describe|!Tell me] the [colour|color] of {ref}.",
            "Look at {ref}. [What colour is it|What color is it|!Which colour does it have]?",
            "[!How would you describe the colour of] {ref}?",
            "[!What sort of colour] does {ref} have?",
        ),
        "attr_shape": (
            "[|In the image, |Looking at the picture, ]what shape is {ref}?",
            "What shape is {ref}[ in the image| in the photo| in view]?",
            "What is the shape of {ref}[| in the picture| in the photo]?",
            "[Which|What] kind of [object|thing|!item] is {ref}?",
            "[Name|Give|State|Please name|Tell me|Identify] the shape of {ref}.",
            "What sort of [object|thing|!item] is {ref}?",
            "Look at {ref}. [What shape is it|What shape does it have|What is its shape|!Which shape is it]?",
            "[!Describe|!Please describe] the shape of {ref}.",
            "[!How would you describe the shape of] {ref}?",
            "[!Which shape does] {ref} have?",
        ),
        "rel_lr": (
            "From the [viewer's|camera's] [perspective|point of view|!viewpoint], is {a} to the "
            "[left or to the right|right or to the left] of {b}?",
            "Is {a} [left or right|right or left] of {b}" + _WHERE + "?",
            "[As seen|Seen] from the camera, is {a} on the [left or the right|right or the left] of {b}?",
            "Relative to {b}, is {a} [to the left or right|to the right or left|on the left or the right]?",
            "Is {a} to the left of {b} or to the right of it" + _WHERE + "?",
            "[!Looking at the scene], is {a} left or right of {b}?",
            "[!Compared with|!Compared to] {b}, is {a} [on the left or the right|to the left or right]?",
            "Does {a} [!lie|!sit] [left or right|right or left] of {b}?",
        ),
        "rel_fb": (
            "From the [viewer's|camera's] [perspective|viewpoint|!point of view], is {a} in front of or "
            "behind {b}?",
            "Is {a} in front of {b} or behind it" + _WHERE + "?",
            "Is {a} [in front of or behind|behind or in front of] {b}" + _WHERE + "?",
            "[As seen|Seen] from the camera, is {a} in front of or behind {b}?",
            "Compared [with|to] {b}, is {a} [in front or behind|behind or in front]?",
            "Does {a} [lie|sit] in front of or behind {b}" + _WHERE + "?",
            "[!Relative to] {b}, is {a} [in front or behind|behind or in front]?",
            "[!Looking at the scene], is {a} in front of or behind {b}?",
            "[!Does {a} stand] in front of or behind {b}?",
        ),
        "rel_viewer": (
            "Is {a} on your [left or on your right|right or on your left]?",
            "From where you stand, is {a} to the [left or the right|right or the left]?",
            "Is {a} to the [viewer's|camera's] [left or right|right or left]" + _WHERE + "?",
            "Is {a} on the [left or the right|right or the left] side of the [view|image|picture|!photo]?",
            "[In|Looking at] the [image|picture|!scene], is {a} on the left or on the right?",
            "[!Is {a} more to your] [left or to your right|right or to your left]?",
            "[!On which side of you] is {a}, left or right?",
            "[!Seen from where you stand], is {a} on the left or the right?",
        ),
        "dist_cam": (
            "How far is {a} from the [camera|viewer]" + _M + "?",
            "What is the distance [from the camera to {a}|between the camera and {a}|!from {a} to the camera]"
            "[| in metres]?",
            "How many metres [away from the camera is {a}|is {a} from the camera]?",
            "[Estimate|Give|State|!Report] the distance between the camera and {a}[| in metres].",
            "[Estimate|Give|State|!Report] the distance from the camera to {a}[| in metres].",
            "[!How far away is] {a}[| from the camera]?",
            "[!What is the camera-to-object distance of] {a}[| in metres]?",
        ),
        "dist_pair": (
            "How far apart are {a} and {b}" + _M + "?",
            "What is the distance between {a} and {b}[| in metres]?",
            "[How many metres separate|What distance separates] {a} [from|and] {b}?",
            "[Estimate|Give|State|Report] the distance [from {a} to {b}|between {a} and {b}][| in metres].",
            "[!How far is] {a} from {b}" + _M + "?",
            "[!How much space is there between] {a} and {b}[| in metres]?",
            "[!How many metres lie between] {a} and {b}?",
        ),
        "size_larger": (
            "Which [is|one is] [larger|bigger], {a} or {b}?",
            "Which [object|thing|!item] is [larger|bigger]: {a} or {b}?",
            "[|In the image, ]is {a} or {b} the [larger|bigger] [object|one|thing]?",
            "Between {a} and {b}, which [takes up more space|is larger|is bigger|is the larger one]?",
            "[|Looking at the image, ]which of {a} and {b} is [larger|bigger]?",
            "[!Of {a} and {b}, which one is] [bigger|larger]?",
            "[!Which of the two is] [bigger|larger], {a} or {b}?",
        ),
        "size_height": (
            "How tall is {a}" + _M + "?",
            "How high is {a}" + _M + "?",
            "What is the height of {a}" + _M + "?",
            "Estimate how tall {a} is" + _M + ".",
            "[Estimate|Give|State|Tell me|Please give|Measure|!Report] the height of {a}[| in metres].",
            "[!How many metres tall is] {a}?",
            "[!What height does] {a} have?",
            "[!How high does] {a} stand" + _M + "?",
        ),
        "nf_camera": (
            "Which [object|thing|item]" + _WHERE + " is {rel} the camera?",
            "Which of the [visible objects|objects in view|objects in the scene] is {rel} the camera?",
            "[Name|Give] the object {rel} the camera.",
            "What is the [object|thing] {rel} the [viewer|camera]?",
            "Which object [lies|sits] {rel} the [camera|viewer]?",
            "Among the [visible objects|objects in view], which one is {rel} the camera?",
            "Tell me which object [lies|is] {rel} the camera.",
            "[!Of everything in view], what is {rel} the camera?",
            "[!Which thing lies] {rel} [the camera|the viewer|you]?",
        ),
        "nf_object": (
            "Which [object|thing|item]" + _WHERE + " is {rel} {a}?",
            "[|Looking at the image, ]which of the [visible objects|objects in view|other objects] is "
            "{rel} {a}?",
            "[Name|Give] the object {rel} {a}.",
            "What is the [object|thing|item] {rel} {a}?",
            "What [is|lies] {rel} {a}?",
            "Which object [lies|sits] {rel} {a}?",
            "Of everything in view, what is {rel} {a}?",
            "[!Among the other objects], which one is {rel} {a}?",
            "[!Tell me which object] [lies|is] {rel} {a}.",
            "[!Which thing lies] {rel} {a}?",
        ),
        "cm_turn_dir": (
            "Between the first and the second [view|image|picture], did the camera turn "
            "[left or right|right or left]?",
            "From [view 1 to view 2|image 1 to image 2|!picture 1 to picture 2], which way did the camera "
            "turn?",
            "Did the camera [rotate|turn] to the [left or to the right|right or to the left] between the two "
            "[images|views|!pictures]?",
            "Going from the first [image|view] to the second, did the [view|camera] turn "
            "[left or right|right or left]?",
            "[!Did the camera pan] left or right between the two [images|views]?",
            "[!In which direction did the camera turn] from the first [image|view] to the second?",
        ),
        "cm_turn_deg": (
            "[By how many degrees|How many degrees] did the camera [turn|rotate] between the first and "
            "the second [view|image]?",
            "How far did the camera [rotate|turn|pan], in degrees, from "
            "[view 1 to view 2|image 1 to image 2]?",
            "What is the turning angle between the two [views|images|pictures][|, in degrees]?",
            "How [many degrees|much] did the heading change from the first [image|view|picture] to the "
            "second?",
            "[!Estimate the turning angle] from the first [picture|image] to the second.",
            "[!How much did the camera] [turn|rotate] between the two [images|views], in degrees?",
        ),
        "cm_move_dist": (
            "How far did the camera [move|travel] between the first and the second [view|image|picture]?",
            "What distance did the camera [travel|cover] from [view 1 to view 2|image 1 to image 2]?",
            "How many metres did the camera [move|travel] between the two [images|views|pictures]?",
            "Going from the first [image|view] to the second, how far did the camera [move|travel]?",
            "Estimate how far the camera [moved|travelled][|, in metres].",
            "[!By how many metres did the camera move] between the two [images|views|pictures]?",
            "[!How far is the second view from the first]" + _M + "?",
        ),
        "cm_move_dir": (
            "Between the first and the second [view|image], did the camera move to the "
            "[left or to the right|right or to the left]?",
            "From [view 1 to view 2|image 1 to image 2], did the camera [shift|move|step] left or right?",
            "Did the camera travel to its [left or to its right|right or to its left] between the two "
            "[images|views]?",
            "Going from the first [image|view] to the second, did the camera [step|move|shift] "
            "[left or right|right or left]?",
            "In which direction did the camera move sideways, left or right?",
            "[!Sideways, did the camera move] to the left or to the right between the two [images|views]?",
            "[!Which way did the camera] [shift|step] from the first [image|view] to the second?",
        ),
        "vis_yesno": (
            "{motion} [Will|Would] {a} be [visible|in view] [then|afterwards|after that]?",
            "{motion} [Can you see|Can you spot] {a} [afterwards|then|after that]?",
            "{motion} Does {a} come into view[| then| afterwards]?",
            "{motion} Is {a} [in view|visible] [after that|then]?",
            "{motion} [!Would {a} show up] [in the new view|afterwards]?",
            "{motion} [!Does {a} become visible][| then]?",
            "{motion} [!Does {a} appear][| then| afterwards]?",
        ),
        "vis_count": (
            "{motion} How many [objects|things] come into view[| afterwards| then]?",
            "{motion} How many new [objects|things] become visible[| afterwards| then]?",
            "{motion} How many objects that were out of view can [be seen|be spotted|you see] afterwards?",
            "{motion} Count the [objects|things] that [appear|come into view|become visible].",
            "{motion} What number of new [objects|things] become visible[| afterwards]?",
            "{motion} [!How many objects appear][| afterwards]?",
            "{motion} [!How many objects show up][| afterwards]?",
            "{motion} [!Count the new objects][| that become visible].",
        ),
        "vis_which": (
            "{motion} Which [object|thing] [comes into view|becomes visible|shows up][| afterwards]?",
            "{motion} What new [object|thing] can you [see|spot] [afterwards|then]?",
            "{motion} Which [object|thing] appears[| afterwards| then]?",
            "{motion} [!Name the object that] [appears|comes into view|becomes visible][| afterwards].",
            "{motion} [!What comes into view][| afterwards]?",
        ),
        "g3d_point": (
            _LOOK + "[where is|what is the position of] the centre of {a} in [camera coordinates|the camera "
            "frame]? " + _CAM,
            "[Give|State] the 3D position of {a}" + _WHERE + " relative to the camera. " + _CAM,
            "What are the [camera-frame|3D] coordinates of {a}" + _WHERE + "? " + _CAM,
            "Locate {a} in 3D in the camera frame. " + _CAM,
            "[!Where in 3D is {a}], relative to the camera? " + _CAM,
            "[!Report the position of] {a} in [camera coordinates|the camera frame]. " + _CAM,
        ),
        "g3d_box": (
            _LOOK
            + "[give|state|!report] the 3D bounding box of {a} in [camera coordinates|the camera frame]. "
            + _CAM,
            "What is the camera-frame 3D [box|bounding box] of {a}" + _WHERE + "? " + _CAM,
            "Draw a 3D box around {a} in the camera frame. " + _CAM,
            "Ground {a} with a 3D bounding box relative to the camera. " + _CAM,
            "[Give|State] the 3D box that encloses {a} in [camera coordinates|the camera frame]. " + _CAM,
            "[!Which 3D box] in [camera coordinates|the camera frame] encloses {a}? " + _CAM,
        ),
        "vis_stay": (
            "{motion} [Will|Would] {a} still be [visible|in view] [then|afterwards|after that]?",
            "{motion} Is {a} still [in view|visible][| then| after that]?",
            "{motion} Does {a} stay [in view|visible][| then| afterwards]?",
            "{motion} Can you still [see|spot] {a}[| afterwards| then]?",
            "{motion} Does {a} remain [in view|visible][| afterwards]?",
            "{motion} [!Would {a} stay] [in view|visible][| afterwards]?",
            "{motion} [!Is {a} still there] [afterwards|then]?",
            "{motion} [!Will you still see] {a}[| afterwards]?",
        ),
    }
)


# kind -> (training phrasings, held-out phrasings), expanded once at import
PHRASINGS: MappingProxyType[str, tuple[tuple[Phrasing, ...], tuple[Phrasing, ...]]] = MappingProxyType(
    {kind: expand_all(PATTERNS[kind]) for kind in KIND_FAMILY}
)
# kind -> (training templates, held-out templates): the texts, slots in braces
TEMPLATES: MappingProxyType[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {kind: tuple(tuple(p.text for p in split) for split in pair) for kind, pair in PHRASINGS.items()}
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
