"""The web app (`charattr app`, Gradio): one image or a small batch through the same core API.

    service.py   pipelines per control setting (one CLIP model shared), one image with its evidence
    batch.py     uploaded images / a zip / a server-side folder -> table, CSV, Parquet, failed files
    bench.py     throughput and cache speed-up on a small generated sample, with the machine
    about.py     the asset graph, the versions in use, the commands to run the same at scale
    ui.py        the Gradio blocks (tabs) over those; never shows a traceback
    cli.py       the `charattr app` command (registered through the `charattr.commands` entry point)

Gradio is an optional extra (`pip install 'charattr[app]'`); only ui.py imports it.
"""
