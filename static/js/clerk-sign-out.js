// Signing out of the portal ends its session and refuses the Clerk session's remaining tokens, but Clerk's
// own session (its __client cookie on Clerk's domain) would still be open: on a shared reception computer the
// next "Sign in with Clerk" would sign the previous user straight back in. So the page the portal sends a
// signed-out browser to carries data-clerk-sign-out, and this signs the browser out of Clerk as well.
// A static file, not an inline script: the Content-Security-Policy allows scripts from 'self' only.
(function () {
  var marker = document.querySelector("[data-clerk-sign-out]");
  if (!marker) {
    return;
  }
  var after = marker.getAttribute("data-after-sign-out") || "/sign-in/";
  var waited = 0;
  // Clerk's script is loaded async and clerk-session.js calls Clerk.load(): wait for it rather than load twice.
  (function signOutWhenLoaded() {
    var clerk = window.Clerk;
    if (clerk && clerk.loaded) {
      if (clerk.session || clerk.user) {
        clerk.signOut({ redirectUrl: after });
      }
      return;
    }
    if ((waited += 100) <= 15000) {
      setTimeout(signOutWhenLoaded, 100);
    }
  })();
})();
