"""generator: a Wan2.1 video DiT that animates a portrait following rendered normal/depth videos (ExpPortrait §3.3).

Modules: config (named sizes, the real Wan2.1-1.3B configs), model (HeadGenerator), pipeline (sampling), train
(flow-matching training through accelerate), data (clip folders and conditions), cli (`generator ...`).
"""
