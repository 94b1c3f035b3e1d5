"""salvusctl: the admin's one tool for a Salvus appliance."""

__version__ = "0.1.0"
