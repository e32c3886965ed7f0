"""Custom callbacks, selected by file name: `callbacks: [my_callback]` loads `callbacks/my_callback.py`.

The file defines `CALLBACK`, an RLlib RLlibCallback subclass; it runs beside the built-in
Procgen metrics callback. One outside this package is named `package.module:ClassName`.
"""
