"""The full engines that need torch: the diffusion restorer and its model loading.

Imported only when an engine that needs it is chosen (lostface.registry), so the core install
stays small; install with `pip install 'lostface[diffusion]'`.
"""
