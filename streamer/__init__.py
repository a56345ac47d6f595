"""The streaming worker: the Faust app, the batch lifecycle, publishing, metrics and the
worker's web views. Nothing else lives here (tooling, integrations and jobs have rooms of
their own)."""
