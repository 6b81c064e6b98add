"""heatmetro: privacy-first Global Heatmap and Metro counts from a GPS activity stream."""

__version__ = "0.1.0"
