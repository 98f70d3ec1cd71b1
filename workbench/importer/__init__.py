"""Importers: other tools' configurations into workbench files (GoCD XML: ``gocd``)."""
