"""The Gradio front end (prompt -> retrieved video -> motion -> export). Not built yet: see
the browser-app issue; ``launch.py`` falls back to a set-up check until ``app.main`` exists."""
