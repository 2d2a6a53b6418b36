"""Tables, plots and the reproduce driver: what turns finished runs into the papers' tables."""
