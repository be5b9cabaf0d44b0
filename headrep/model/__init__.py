"""The body model layer: SMPL-X-format files (the licensed one, or the project's own open model or stand-in), the
head-and-shoulders subset S, the upsampling operator U, the dense head ``LBS(U·M_S + D)`` and mesh ops.
Knows nothing of rendering, video or fitting."""

from headrep.model.body import (BodyModel, BodyOutput, axis_angle_to_matrix, face_region,
                                head_and_shoulders_subset, load_body_model, skin, validate_model_file)
from headrep.model.constants import (HEAD_AND_SHOULDER_JOINTS, HEAD_JOINTS, J_HEAD, J_JAW, J_LEYE, J_NECK,
                                     J_REYE, J_ROOT, MP_EYE_OUTER, MP_TO_IBUG68, NUM_IBUG, NUM_JOINTS,
                                     NUM_MP_FACE, NUM_MP_POINTS)
from headrep.model.head import MODEL_TO_CAMERA, DenseHead, DenseOutput, to_camera
from headrep.model.meshops import face_normals, icosphere, vertex_normals
from headrep.model.standin import standin_path
from headrep.model.topology import (DenseTopology, SparseOperator, base_smoother, build_dense_topology,
                                    graph_laplacian, laplacian_penalty, sparse_matmul, submesh,
                                    uniform_laplacian)

__all__ = [
    "BodyModel", "BodyOutput", "DenseHead", "DenseOutput", "DenseTopology", "HEAD_AND_SHOULDER_JOINTS",
    "HEAD_JOINTS", "J_HEAD", "J_JAW", "J_LEYE", "J_NECK", "J_REYE", "J_ROOT", "MODEL_TO_CAMERA", "MP_EYE_OUTER",
    "MP_TO_IBUG68", "NUM_IBUG", "NUM_JOINTS", "NUM_MP_FACE", "NUM_MP_POINTS", "SparseOperator", "axis_angle_to_matrix",
    "base_smoother", "build_dense_topology", "face_normals", "face_region", "graph_laplacian",
    "head_and_shoulders_subset", "icosphere", "laplacian_penalty", "load_body_model", "skin", "sparse_matmul",
    "standin_path", "submesh", "to_camera", "uniform_laplacian", "validate_model_file", "vertex_normals",
]
