"""The napari plugin: reader, writer, sample data and widgets. Only this package imports napari."""
