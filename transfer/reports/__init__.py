"""Pages and pictures of what was done: `report.html` of a run, the pieces every HTML page shares
(`pages`), the audit's page and Grad-CAM (`visualize`). Imports the packages below it, up to
`evaluation`.
"""
