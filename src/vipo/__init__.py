"""vipo: iterative preference optimization (IPO, Diffusion-DPO/KTO) for text-to-video diffusion models."""

__version__ = "0.1.0"
