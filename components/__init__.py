"""One Kubeflow Pipelines component per recipe stage (see `components.stages`)."""
