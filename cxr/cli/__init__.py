"""Console entry points, one thin module per command (see pyproject's [project.scripts])."""
