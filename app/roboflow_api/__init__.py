"""The subset of Roboflow's REST API that its Python package (`roboflow`) uses to create a project, upload
images and annotations, generate a version, train, predict and download, mapped onto samtune's own workspaces,
datasets, versions, jobs and models. docs/migrating-from-roboflow.md says what is mapped how."""
