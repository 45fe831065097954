"""The Gradio front end (prompt -> retrieved video -> motion -> export): ``app.main.build_app``
/ ``app.main.serve`` (started by ``python launch.py``); ``app.service`` holds the work without
any Gradio, ``app.views`` the small HTML/Markdown pieces."""
