// Clerk's session token lives 60 s in the __session cookie; Clerk's script refreshes it every 50 s while a
// page is open, so each request the portal receives carries a fresh token. Nothing else runs here.
window.addEventListener("load", function () {
  if (window.Clerk && typeof window.Clerk.load === "function") {
    window.Clerk.load();
  }
});
