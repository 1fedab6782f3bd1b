"""`m2tune report`: tuning studies as dashboards in one HTML file (data.py -> figures.py -> page.py).

The only part of m2tune that imports pandas and plotly.
"""
