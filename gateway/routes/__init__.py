"""One router per resource. Routes stay thin: validate, call a service, return."""
