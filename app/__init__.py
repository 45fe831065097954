"""The Gradio front end (prompt -> retrieved video -> motion -> export): ``app.main`` lays out the
page (``build_app`` / ``serve``, started by ``python launch.py``), ``app.handlers`` says what each
request does as plain functions, ``app.service`` holds the work without any Gradio, ``app.views``
the small HTML/Markdown pieces."""
