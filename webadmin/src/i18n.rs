//! Every word the pages show, in one place: one [`Text`] per language. A
//! translator copies [`EN`] and translates the strings; the compiler makes
//! sure no string is missing. The language is the browser's choice
//! (`Accept-Language`) unless the person picked one on a page (a cookie).

/// A language the pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

impl Lang {
    /// Every language, in the order the language menu shows them.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::De];

    /// The BCP 47 tag (`lang` attribute, cookie value).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The language named `tag` (`en`, `de-AT` …), if the pages have it.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next().unwrap_or("").trim();
        Lang::ALL
            .into_iter()
            .find(|l| l.tag().eq_ignore_ascii_case(primary))
    }

    /// The first language of an `Accept-Language` header the pages have
    /// (quality values are taken in the order given, which browsers sort).
    pub fn from_accept(header: &str) -> Option<Lang> {
        header
            .split(',')
            .take(16)
            .filter_map(|part| {
                let mut it = part.split(';');
                let tag = it.next()?.trim();
                let q_zero = it.any(|p| p.trim().replace(' ', "") == "q=0");
                if q_zero {
                    None
                } else {
                    Lang::from_tag(tag)
                }
            })
            .next()
    }

    /// The words of this language.
    pub fn text(self) -> &'static Text {
        match self {
            Lang::En => &EN,
            Lang::De => &DE,
        }
    }
}

/// The words of the pages in one language.
#[derive(Debug)]
pub struct Text {
    /// The language's own name, for the language menu.
    pub language_name: &'static str,
    pub language_label: &'static str,
    pub change_language: &'static str,
    pub skip_to_content: &'static str,
    pub app_name: &'static str,
    pub tagline: &'static str,
    // Sign-in.
    pub sign_in_title: &'static str,
    pub sign_in_intro: &'static str,
    pub address: &'static str,
    pub address_hint: &'static str,
    pub password: &'static str,
    pub remember: &'static str,
    pub remember_hint: &'static str,
    pub sign_in: &'static str,
    pub wrong_password: &'static str,
    pub too_many_from_address: &'static str,
    pub too_many_for_account: &'static str,
    pub address_required: &'static str,
    pub password_required: &'static str,
    // Home.
    pub home_title: &'static str,
    pub signed_in_as: &'static str,
    pub role_admin: &'static str,
    pub role_member: &'static str,
    pub sign_out: &'static str,
    pub your_browsers: &'static str,
    pub change_password: &'static str,
    pub main_menu: &'static str,
    // Browsers.
    pub browsers_title: &'static str,
    pub browsers_intro: &'static str,
    pub this_browser: &'static str,
    pub remembered: &'static str,
    pub until_closed: &'static str,
    pub signed_in_at: &'static str,
    pub last_seen: &'static str,
    pub from_address: &'static str,
    pub sign_out_this: &'static str,
    pub sign_out_everywhere: &'static str,
    pub sign_out_everywhere_hint: &'static str,
    pub unknown_browser: &'static str,
    // Password.
    pub password_title: &'static str,
    pub password_intro: &'static str,
    pub current_password: &'static str,
    pub new_password: &'static str,
    pub repeat_password: &'static str,
    pub passwords_differ: &'static str,
    pub password_unacceptable: &'static str,
    pub save_password: &'static str,
    // Notices after an action.
    pub notice_signed_out: &'static str,
    pub notice_signed_out_everywhere: &'static str,
    pub notice_browser_signed_out: &'static str,
    pub notice_password_changed: &'static str,
    // Error pages.
    pub error_title: &'static str,
    pub error_back: &'static str,
    pub error_not_found: &'static str,
    pub error_csrf: &'static str,
    pub error_bad_form: &'static str,
    pub error_too_large: &'static str,
    pub error_unavailable: &'static str,
    pub error_sign_in_first: &'static str,
}

/// English.
pub static EN: Text = Text {
    language_name: "English",
    language_label: "Language",
    change_language: "Change",
    skip_to_content: "Skip to content",
    app_name: "Kith",
    tagline: "Your household's chat",
    sign_in_title: "Sign in",
    sign_in_intro: "Sign in with the address and password of your chat account on this box.",
    address: "Address",
    address_hint: "For example alice@example.org, or just alice.",
    password: "Password",
    remember: "Remember this browser",
    remember_hint: "Stay signed in for 30 days, even after the browser is closed. Leave it off on a shared computer.",
    sign_in: "Sign in",
    wrong_password: "Wrong address or password.",
    too_many_from_address: "Too many sign-in attempts from your address. Wait a minute and try again.",
    too_many_for_account: "Too many sign-in attempts on this account. Wait a minute, or use a device that signed in before.",
    address_required: "Enter your address.",
    password_required: "Enter your password.",
    home_title: "Home",
    signed_in_as: "Signed in as",
    role_admin: "admin",
    role_member: "member",
    sign_out: "Sign out",
    your_browsers: "Your browsers",
    change_password: "Change password",
    main_menu: "Main menu",
    browsers_title: "Your browsers",
    browsers_intro: "These browsers are signed in to your account. Sign out any you do not recognise.",
    this_browser: "This browser",
    remembered: "remembered",
    until_closed: "until the browser closes",
    signed_in_at: "Signed in",
    last_seen: "Last used",
    from_address: "From",
    sign_out_this: "Sign out",
    sign_out_everywhere: "Sign out everywhere",
    sign_out_everywhere_hint: "Signs out every browser on this list, this one too. Apps on phones and computers stay signed in.",
    unknown_browser: "Unknown browser",
    password_title: "Change password",
    password_intro: "The new password is used by the apps too. Every other browser is signed out, and apps that remember a login token must sign in again.",
    current_password: "Current password",
    new_password: "New password",
    repeat_password: "New password again",
    passwords_differ: "The two new passwords differ.",
    password_unacceptable: "Choose a password of 1 to 1024 characters.",
    save_password: "Change password",
    notice_signed_out: "You are signed out.",
    notice_signed_out_everywhere: "You are signed out on every browser.",
    notice_browser_signed_out: "That browser is signed out.",
    notice_password_changed: "Your password is changed. Your other browsers are signed out.",
    error_title: "Something went wrong",
    error_back: "Back to the start page",
    error_not_found: "There is no page at this address.",
    error_csrf: "This form has expired or did not come from this box's own page. Go back, reload the page and try again.",
    error_bad_form: "The form could not be read. Go back, reload the page and try again.",
    error_too_large: "What was sent is too large.",
    error_unavailable: "The box could not do that just now. Try again in a moment.",
    error_sign_in_first: "Sign in first.",
};

/// German.
pub static DE: Text = Text {
    language_name: "Deutsch",
    language_label: "Sprache",
    change_language: "Wechseln",
    skip_to_content: "Zum Inhalt springen",
    app_name: "Kith",
    tagline: "Der Chat eures Haushalts",
    sign_in_title: "Anmelden",
    sign_in_intro: "Melde dich mit der Adresse und dem Passwort deines Chat-Kontos auf dieser Box an.",
    address: "Adresse",
    address_hint: "Zum Beispiel alice@example.org, oder einfach alice.",
    password: "Passwort",
    remember: "Diesen Browser merken",
    remember_hint: "30 Tage angemeldet bleiben, auch wenn der Browser geschlossen wird. Auf einem geteilten Computer nicht ankreuzen.",
    sign_in: "Anmelden",
    wrong_password: "Adresse oder Passwort falsch.",
    too_many_from_address: "Zu viele Anmeldeversuche von deiner Adresse. Warte eine Minute und versuche es erneut.",
    too_many_for_account: "Zu viele Anmeldeversuche für dieses Konto. Warte eine Minute oder nimm ein Gerät, das schon angemeldet war.",
    address_required: "Gib deine Adresse ein.",
    password_required: "Gib dein Passwort ein.",
    home_title: "Start",
    signed_in_as: "Angemeldet als",
    role_admin: "Admin",
    role_member: "Mitglied",
    sign_out: "Abmelden",
    your_browsers: "Deine Browser",
    change_password: "Passwort ändern",
    main_menu: "Hauptmenü",
    browsers_title: "Deine Browser",
    browsers_intro: "Diese Browser sind mit deinem Konto angemeldet. Melde alle ab, die du nicht kennst.",
    this_browser: "Dieser Browser",
    remembered: "gemerkt",
    until_closed: "bis der Browser schließt",
    signed_in_at: "Angemeldet",
    last_seen: "Zuletzt benutzt",
    from_address: "Von",
    sign_out_this: "Abmelden",
    sign_out_everywhere: "Überall abmelden",
    sign_out_everywhere_hint: "Meldet jeden Browser dieser Liste ab, auch diesen. Apps auf Telefonen und Computern bleiben angemeldet.",
    unknown_browser: "Unbekannter Browser",
    password_title: "Passwort ändern",
    password_intro: "Das neue Passwort gilt auch für die Apps. Alle anderen Browser werden abgemeldet, und Apps mit gemerktem Anmeldeschlüssel müssen sich neu anmelden.",
    current_password: "Aktuelles Passwort",
    new_password: "Neues Passwort",
    repeat_password: "Neues Passwort wiederholen",
    passwords_differ: "Die beiden neuen Passwörter sind verschieden.",
    password_unacceptable: "Wähle ein Passwort mit 1 bis 1024 Zeichen.",
    save_password: "Passwort ändern",
    notice_signed_out: "Du bist abgemeldet.",
    notice_signed_out_everywhere: "Du bist in jedem Browser abgemeldet.",
    notice_browser_signed_out: "Dieser Browser ist abgemeldet.",
    notice_password_changed: "Dein Passwort ist geändert. Deine anderen Browser sind abgemeldet.",
    error_title: "Etwas ist schiefgegangen",
    error_back: "Zurück zur Startseite",
    error_not_found: "Unter dieser Adresse gibt es keine Seite.",
    error_csrf: "Dieses Formular ist abgelaufen oder kam nicht von der Seite dieser Box. Geh zurück, lade die Seite neu und versuche es erneut.",
    error_bad_form: "Das Formular konnte nicht gelesen werden. Geh zurück, lade die Seite neu und versuche es erneut.",
    error_too_large: "Das Gesendete ist zu groß.",
    error_unavailable: "Die Box konnte das gerade nicht tun. Versuche es gleich noch einmal.",
    error_sign_in_first: "Melde dich zuerst an.",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_first_known() {
        assert_eq!(Lang::from_accept("de-AT,de;q=0.9,en;q=0.8"), Some(Lang::De));
        assert_eq!(Lang::from_accept("fr-FR, en-GB;q=0.7"), Some(Lang::En));
        assert_eq!(Lang::from_accept("de;q=0, en"), Some(Lang::En));
        assert_eq!(Lang::from_accept("fr"), None);
        assert_eq!(Lang::from_tag("DE"), Some(Lang::De));
    }
}
