"""The model: the backbone registry, backbone + head, the saved artifact and its loader."""
