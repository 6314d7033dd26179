// Lists and creates notes through the backend API, same origin: the load balancer
// routes /api/ to the backend app.
const API = "/api/notes/";

async function request(url, options) {
  const response = await fetch(url, {
    headers: { "Accept": "application/json", "Content-Type": "application/json" },
    ...options,
  });
  if (!response.ok) {
    throw new Error(`${options && options.method || "GET"} ${url}: HTTP ${response.status}`);
  }
  return response.json();
}

Vue.createApp({
  data() {
    return { notes: [], text: "", error: "", loading: true, busy: false };
  },
  mounted() {
    this.load();
  },
  methods: {
    async load() {
      try {
        this.notes = await request(API);
        this.error = "";
      } catch (err) {
        this.error = err.message;
      } finally {
        this.loading = false;
      }
    },
    async add() {
      this.busy = true;
      try {
        const note = await request(API, {
          method: "POST",
          body: JSON.stringify({ text: this.text.trim() }),
        });
        this.notes.unshift(note);
        this.text = "";
        this.error = "";
      } catch (err) {
        this.error = err.message;
      } finally {
        this.busy = false;
      }
    },
  },
}).mount("#app");
