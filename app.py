"""TAC Studio's entry point: ``streamlit run app.py`` (or scripts/start.sh). The pages and the router are in
``ui/navigation.py``; each page's file is in ``pages/``."""
from ui import navigation

navigation.run()
