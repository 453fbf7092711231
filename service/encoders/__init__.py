"""One encoder per wire protocol, each reading only run events (`service.runs.events`)."""
