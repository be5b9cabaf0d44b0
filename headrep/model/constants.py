"""Named numbers shared by every layer: SMPL-X joint ids, MediaPipe landmark counts, the MediaPipe -> iBUG-68
table. One place for each; import them from here (or from ``headrep.model``)."""

from __future__ import annotations

import numpy as np

# SMPL-X's 55 joints (body 0-21, jaw 22, eyes 23/24, hands 25-54); the ones the head pipeline names.
NUM_JOINTS = 55
J_ROOT, J_SPINE2, J_SPINE3, J_NECK, J_LCOLLAR, J_RCOLLAR, J_HEAD, J_LSHOULDER, J_RSHOULDER = (
    0, 6, 9, 12, 13, 14, 15, 16, 17)
J_JAW, J_LEYE, J_REYE = 22, 23, 24
HEAD_JOINTS = (J_HEAD, J_JAW, J_LEYE, J_REYE)
HEAD_AND_SHOULDER_JOINTS = (J_SPINE3, J_NECK, J_LCOLLAR, J_RCOLLAR) + HEAD_JOINTS
# SMPL-X's kinematic tree (parents of joints 0..54).
SMPLX_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
     20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
     21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53], dtype=np.int64)

# MediaPipe FaceMesh with refine_landmarks=True: 468 surface points + 10 iris points (which follow gaze, not
# the surface, so the fitter leaves them out).
NUM_MP_POINTS = 478
NUM_MP_FACE = 468
MP_EYE_OUTER = (33, 263)  # outer eye corners: the inter-ocular distance that normalises NME
# Eye contours (MediaPipe); right = the subject's right (x < 0 in model space).
MP_RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
MP_LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]

# MediaPipe -> iBUG-68 (REFERENCE.md: the most copied table with jaw ends 0/16 -> 127/356, brow ends -> 70/300).
MP_TO_IBUG68 = np.array([
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                      # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,                                                # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                          # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,                                # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87], dtype=np.int64)                                 # inner lips 60-67
NUM_IBUG = 68
