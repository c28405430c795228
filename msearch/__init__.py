"""msearch: multimodal search over folders of media."""
