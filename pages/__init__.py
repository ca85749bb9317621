"""The dashboard pages (registered from app.py with st.navigation) and their shared glue, common.py."""
